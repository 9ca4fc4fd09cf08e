"""The Dagster definitions: thin wrappers that read the partition, call the library, report."""
