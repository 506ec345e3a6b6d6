//! wharf-controller
