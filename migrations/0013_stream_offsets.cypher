// The Kafka consumer records, per consumer group and partition, the next offset it has written
// to the graph (graph/ingest/stream.py), so that a read given a Kafka consistency token can
// tell when the message is visible (graph/consistency.py).
CREATE CONSTRAINT stream_offset_key IF NOT EXISTS
FOR (o:StreamOffset) REQUIRE (o.group, o.topic, o.partition) IS UNIQUE;
