//! End-to-end tests live in `tests/tests/`; see `scripts/test.sh` for how they are run.
