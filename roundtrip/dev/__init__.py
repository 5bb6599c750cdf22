"""What a laptop needs instead of production: throwaway Postgres and Redis servers, the
BigQuery emulator, the sample-data generator and the demo that runs the whole circle."""
