CREATE TABLE fine (id INT);

CREATE TABLE broken (id INT,
  name TEXT NOT NUL);
