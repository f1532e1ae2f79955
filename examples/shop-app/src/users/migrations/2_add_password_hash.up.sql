-- An argon2 hash (PHC string) of the user's password; a user without one cannot log in.
ALTER TABLE users ADD COLUMN password_hash TEXT;
