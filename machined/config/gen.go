package config

//go:generate go run ./internal/docgen -src . -schema schema/config.schema.json -docs ../../docs/config.md
