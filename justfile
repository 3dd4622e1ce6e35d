# Todo API — developer commands. `just` lists them. Every recipe installs the locked dependencies first
# (a no-op when .venv already matches requirements/dev.lock), so a fresh clone needs nothing else.

set shell := ["bash", "-euo", "pipefail", "-c"]

python := ".venv/bin/python"

# List the recipes
default:
    @just --list

# Create .venv (Python 3.11) and sync it to the hash-pinned lock
install:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v uv >/dev/null || { echo "uv is missing: pip install --require-hashes -r requirements/tools.lock" >&2; exit 1; }
    [ -x .venv/bin/python ] || uv venv --quiet --python 3.11 .venv
    want=$(sha256sum requirements/dev.lock | cut -d' ' -f1)
    if [ "$(cat .venv/.synced-lock 2>/dev/null)" != "$want" ]; then
        uv pip sync --quiet --require-hashes --python .venv/bin/python requirements/dev.lock
        echo "$want" > .venv/.synced-lock
    fi
    # The docs page's Scalar bundle (pinned, integrity-checked). Without npm the page falls back to the CDN.
    if command -v npm >/dev/null && ! ls assets/scalar/scalar-api-reference-*.js >/dev/null 2>&1; then
        .venv/bin/python -m app docs-assets >/dev/null || echo "warning: Scalar bundle not fetched; docs use the CDN" >&2
    fi

# Serve with production settings: wait for the database, migrate once, $WEB_CONCURRENCY workers on $HOST:$PORT
serve: install
    {{ python }} -m app serve

# Development: one process that restarts on code changes
dev: install
    {{ python }} -m app serve --reload

# Apply pending migrations (to DATABASE_URL_UNPOOLED when set, else DATABASE_URL)
migrate: install
    {{ python }} -m app migrate

# Autogenerate a migration from the models (run `just migrate` first; review the file before committing)
revision message: install
    {{ python }} -m app revision "{{ message }}"

# Fetch the pinned Scalar bundle so /schema/scalar works offline (done by install when npm is present)
docs-assets: install
    {{ python }} -m app docs-assets

# Print a development token for USER_ID, signed with JWT_SECRET
token user_id *args: install
    @{{ python }} -m app token "{{ user_id }}" {{ args }}

# Run the whole test suite (PostgreSQL from TEST_DATABASE_URL and SQLite); extra arguments go to pytest
test *args: install
    {{ python }} -m pytest {{ args }}

# Schemathesis, long profile: 1 000 generated cases per operation on each backend (the suite runs 100)
fuzz examples="1000": install
    FUZZ_MAX_EXAMPLES={{ examples }} {{ python }} -m pytest tests/test_fuzz.py -s -q

# Lint, format check and strict type check
lint: install
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy

# Format the code and apply safe lint fixes
fmt: install
    .venv/bin/ruff format .
    .venv/bin/ruff check --fix .

# Re-resolve the locks after changing dependencies in pyproject.toml (hash-pinned, no download URLs)
lock:
    uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements/dev.lock -q
    uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -o requirements/prod.lock -q
    uv pip compile requirements/tools.in --generate-hashes --python-version 3.11 -o requirements/tools.lock -q
    cd tests/interop/better-auth && npm install --package-lock-only --no-audit --no-fund --silent
    # npm keeps packages' "funding" links in the lock; they are URLs, and no commit may carry one.
    python3 -c 'import json,sys; p=sys.argv[1]; d=json.load(open(p)); [v.pop("funding", None) for v in d.get("packages", {}).values()]; open(p, "w").write(json.dumps(d, indent=2) + "\n")' tests/interop/better-auth/package-lock.json
    ! git grep -nE 'https?://' -- '*.lock' '*lock.json'

# Benchmark with wrk on loopback against PostgreSQL (see docs/benchmarks.md); arguments go to bench/run.py; `just bench soak` runs the soak test (bench/soak.py)
bench *args: install
    {{ python }} -m bench.run {{ args }}

# Sync under load: 1 000 idle event streams on one process (memory, pooled connections), event delivery across two instances
bench-sync *args: install
    {{ python }} -m bench.sync {{ args }}

# One user's burst of searches against another user's reads (before/after the issue-10 fixes); figures in docs/benchmarks.md
bench-fairness *args: install
    {{ python }} -m bench.fairness {{ args }}
