//! wharf-core
