//! wharf-router
