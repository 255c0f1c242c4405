"""End to end through the real masakari-engine: the daemons as real processes on a compute
node (tests/engine/node.py), the real masakari-api + masakari-engine over a private
RabbitMQ, and the recording Nova stand-in (the real Nova: test_real_nova.py). Each test asserts what an
operator cares about: the notification's final status in the API and the Nova calls the
engine made — and that no healthy host was disabled or evacuated. One engine per session;
every test uses its own host names. ENGINE_SCENARIOS=FILE appends each outcome as JSON
lines (the source of the tables in docs/recovery.md)."""
