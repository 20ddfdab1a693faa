-- The credential that submitted a task through the API (`token:NAME`, `certificate:NAME`), so
-- a caller that may only submit can read what it submitted. Null for children (their root's
-- counts) and where the coordinator does not require credentials.
ALTER TABLE tasks ADD COLUMN submitted_by text;
