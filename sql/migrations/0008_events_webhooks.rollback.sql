DROP TABLE sent_emails;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
DROP TABLE events;
