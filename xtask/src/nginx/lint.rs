//! nginx lint (issue 4).
