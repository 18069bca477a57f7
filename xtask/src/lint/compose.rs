//! Compose checks (in progress).
use super::TreeView;
use crate::diagnostics::Diagnostic;

pub fn check(_view: &TreeView<'_>) -> Vec<Diagnostic> {
    Vec::new()
}
