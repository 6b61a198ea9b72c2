//! dctl controllers (the core-loop issue adds them).
