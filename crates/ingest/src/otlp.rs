//! OTLP (placeholder while building).
