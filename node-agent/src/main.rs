//! weft-agent: the per-node agent.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("weft-agent is not implemented yet")
}
