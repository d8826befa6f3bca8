//! diskio
