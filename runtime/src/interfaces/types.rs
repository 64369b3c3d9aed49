//! `sluice:service/types` declares only types; its host trait is empty.

use crate::bindings::sluice::service::types::Host;
use crate::state::ServiceView;

impl Host for ServiceView<'_> {}
