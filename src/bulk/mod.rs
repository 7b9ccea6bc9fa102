//! Talking to the search engine's `_bulk` API: encode a chunk (encode.rs), send it
//! (client.rs) to one of the cluster's nodes (nodes.rs), and turn the response into one outcome per event (classify.rs).

pub mod classify;
pub mod client;
pub mod encode;
pub mod nodes;
