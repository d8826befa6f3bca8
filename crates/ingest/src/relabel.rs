//! Prometheus relabeling (placeholder replaced below).
