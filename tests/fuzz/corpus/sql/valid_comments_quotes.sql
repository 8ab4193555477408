-- a comment
SELECT "page_url" AS "Page ""URL""", 'it''s' /* block */ FROM clicks;;