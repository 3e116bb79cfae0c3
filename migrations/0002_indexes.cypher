// Lookups by time and type: recent interactions, last-seen users, latest weather, upcoming events.
CREATE INDEX interaction_at IF NOT EXISTS FOR (n:Interaction) ON (n.at);
CREATE INDEX interaction_type IF NOT EXISTS FOR (n:Interaction) ON (n.type);
CREATE INDEX user_last_seen IF NOT EXISTS FOR (n:User) ON (n.last_seen);
CREATE INDEX user_first_seen IF NOT EXISTS FOR (n:User) ON (n.first_seen);
CREATE INDEX session_started_at IF NOT EXISTS FOR (n:Session) ON (n.started_at);
CREATE INDEX weather_at IF NOT EXISTS FOR (n:WeatherObservation) ON (n.at);
CREATE INDEX local_event_starts_at IF NOT EXISTS FOR (n:LocalEvent) ON (n.starts_at);
CREATE INDEX segment_run_level IF NOT EXISTS FOR (n:Segment) ON (n.run_id, n.level);
CREATE INDEX run_created_at IF NOT EXISTS FOR (n:SegmentationRun) ON (n.created_at);
CREATE INDEX persona_name IF NOT EXISTS FOR (n:Persona) ON (n.name);
