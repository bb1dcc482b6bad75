// Package config turns sidekey's configuration file into a validated runtime
// Config: file format -> validated runtime Config.
//
// The file format (file.go) is what a user writes: YAML decoded through
// yaml.Node so that every value knows its line. Parse converts it once into
// a Config (config.go), which is plain data and never mutated afterwards.
// Every default lives in defaults.go.
//
// Parse reports every problem it finds in one pass, each as a Problem that
// prints as "FILE:LINE: message": unknown keys, type errors, missing or
// foreign fields, dangling names, literal secrets where a reference (ref.go)
// is required, and strings anywhere in the file, comments included, that are
// shaped like well-known credentials (lint.go). No message ever contains the
// value of a secret-carrying field.
//
// The package imports nothing else from sidekey.
package config
