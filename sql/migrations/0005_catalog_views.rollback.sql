DROP VIEW product_documents;
DROP FUNCTION catalog_products(boolean, bigint, bigint, bigint, boolean, text, text);
