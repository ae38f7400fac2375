DROP INDEX orders_payment_expiry_idx;
DROP TABLE payment_events;
DROP TABLE payments;
