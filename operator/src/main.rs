//! weft-operator: reconciles the cluster's `NetworkFabric`.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("weft-operator is not implemented yet")
}
