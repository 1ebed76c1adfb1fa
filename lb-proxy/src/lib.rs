//! lb-proxy: the lb data plane and its operator surface.
//!
//! Map of the crate:
//! - [`admin`]: the admin HTTP API (`/healthz`, `/readyz`, `/metrics`,
//!   `/api/v1/...`) served over an [`admin::AdminSource`], and the small client
//!   behind `lb-proxy get`.
//! - [`views`]: the JSON shapes of `/api/v1/services` and `/api/v1/endpoints`,
//!   built from a snapshot, and the `kubectl get`-style tables printed from them.

pub mod admin;
pub mod views;
