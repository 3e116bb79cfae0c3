"""CRM batch import (CSV/JSONL through a YAML field mapping) and the signed CRM webhook."""
