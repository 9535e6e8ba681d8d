//! weft's own CNI plugin, `weft` in the conflist (being written).

pub mod ipam;
