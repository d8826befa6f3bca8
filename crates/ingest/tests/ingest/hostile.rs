//! Hostile input: every decoder gets truncated, bit-flipped and random
//! bytes and must return (an error or a result), never panic.
