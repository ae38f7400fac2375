DROP VIEW order_documents;
