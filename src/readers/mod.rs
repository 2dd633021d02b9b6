//! Protocol-free readers of streamed bodies, fed network chunks of any size and split, holding
//! a bounded number of bytes whatever the body's size: SSE framing ([`sse`]) and a scanner of a
//! JSON object's top-level values ([`json`]), a copy of a JSON document cut down to the keys
//! wanted, at any depth ([`pruned`]), a JSON body's documents (one value, or each element of
//! a streamed array) so cut down ([`documents`]), a counter of text values ([`text`]), and a
//! decompressed copy of a gzip or zstd request body ([`decoded`]). What the events and values mean is the protocol's
//! business (`crate::protocol`); nothing here panics, whatever the bytes.

mod bounded;
pub mod decoded;
pub mod documents;
pub mod json;
pub mod pruned;
pub mod sse;
pub mod text;

/// Most bytes one body's reader and what it keeps hold at any time, whatever the body's size.
pub const MAX_BUFFERED_BYTES: usize = 64 * 1024;
/// Longest name (model, error type) worth keeping; longer ones are not names.
pub const MAX_NAME_BYTES: usize = 256;
