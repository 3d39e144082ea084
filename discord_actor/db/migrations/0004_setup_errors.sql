-- An actor whose setup() hook failed at a server's start does not run in that process. The
-- failure is kept on its task so that status, /actors list and operators see a broken actor
-- rather than a healthy one with no runs; the next start whose setup() succeeds clears it.
ALTER TABLE tasks
    ADD COLUMN setup_error    text,
    ADD COLUMN setup_error_at timestamptz;
