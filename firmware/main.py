# main.py: the application. Runs after boot.py on a normal boot.
# The reference application grows one practice at a time; for now an
# unprovisioned device returns to the REPL so it can be provisioned.
