// Package telemetry sets up sidekey's logging and, later, its traces and
// metrics. Its Redactor scrubs every live secret value from every log line,
// whatever the level and whatever field the value hides in.
package telemetry
