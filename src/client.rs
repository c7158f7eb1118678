//! The operator WebSocket client (being written).
