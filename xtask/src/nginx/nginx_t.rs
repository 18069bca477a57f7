//! The real `nginx -t`.
