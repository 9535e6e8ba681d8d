//! `weft-cni`: weft's CNI plugin, installed by the agent into the node's CNI bin dir as `weft`
//! (see `weft_node_agent::cni::plugin`).

fn main() {
    std::process::exit(weft_node_agent::cni::plugin::cmd::main());
}
