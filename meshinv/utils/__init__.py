"""Generic helpers with no knowledge of the method: files, logging, configs, weights."""
