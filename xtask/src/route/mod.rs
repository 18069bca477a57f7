//! The routing simulator: what nginx does with a request ([`router`], on [`uri`], [`pcre`] and
//! [`ketama`]), which Synapse process the chosen socket belongs to and what it may serve
//! ([`roles`], [`contract`]), and the book's `routes` blocks ([`routes`], [`check`]).

pub mod ketama;
pub mod pcre;
pub mod router;
pub mod uri;

pub use router::{LocRef, Outcome, Router};
