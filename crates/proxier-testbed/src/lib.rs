//! proxier-testbed
