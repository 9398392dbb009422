-- Runs once, when the postgres service starts on an empty data volume (docker-entrypoint-initdb.d),
-- as POSTGRES_USER, the superuser that owns the schema and runs the coordinator's migrations.
--
-- It creates the login role the coordinator connects as (DATABASE_URL): a member of the NOLOGIN
-- group role fedmark_app, owning nothing. The migrations then grant fedmark_app what the app
-- needs and no more: on audit_log and audit_checkpoints only SELECT and INSERT, so the app can
-- append to the audit log but cannot change, delete, truncate it or switch its triggers off.
--
-- Not run on an existing volume: then run it by hand once, e.g.
--   docker compose exec -e FEDMARK_DB_APP_PASSWORD postgres \
--     psql -U fedmark -d fedmark -f /docker-entrypoint-initdb.d/10-fedmark-app-role.sql
\set ON_ERROR_STOP on
\getenv app_user FEDMARK_DB_APP_USER
\getenv app_password FEDMARK_DB_APP_PASSWORD
-- Unset and empty mean the same: no password is refused, no user name means the default.
\if :{?app_user}
\else
  \set app_user ''
\endif
\if :{?app_password}
\else
  \set app_password ''
\endif
SELECT coalesce(nullif(:'app_user', ''), 'fedmark_coordinator') AS app_user, :'app_password' = '' AS no_password \gset
\if :no_password
  DO $$ BEGIN RAISE EXCEPTION 'set FEDMARK_DB_APP_PASSWORD for the postgres service: the coordinator logs in with it'; END $$;
\endif

-- The group role; the migrations create it too (roles are cluster-wide, so either may come first).
SELECT 'CREATE ROLE fedmark_app NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fedmark_app') \gexec

SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
-- Re-running sets the password again (e.g. after a rotation) and repairs the membership.
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'app_user', :'app_password') \gexec
SELECT format('GRANT fedmark_app TO %I', :'app_user') \gexec
