//! Benchmarks for lb live here (criterion benches come with the performance issue).
