// CRM import and webhook. Profile fields are found from their user (HAS_FIELD) by name;
// webhook deliveries are unique by the hash of their signature, so that a replayed delivery is
// refused by every API process, and pruned by age.
CREATE INDEX profile_field_name IF NOT EXISTS FOR (n:ProfileField) ON (n.name);
CREATE CONSTRAINT webhook_delivery_id IF NOT EXISTS FOR (n:WebhookDelivery) REQUIRE n.id IS UNIQUE;
CREATE INDEX webhook_delivery_received_at IF NOT EXISTS FOR (n:WebhookDelivery) ON (n.received_at);
