DROP TABLE stock_movements;
DROP TABLE products;
DROP TABLE categories;
