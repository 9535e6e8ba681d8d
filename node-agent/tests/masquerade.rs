//! Golden files of weft's nat table (`table inet weft-nat`) for a few fabrics: IPv4, dual-stack with
//! random-fully, IPv6 on a single node. The text is nft's own listing format; the privileged test
//! `nft_netns` applies each case in a namespace and checks the kernel lists it back unchanged.
//! Review a diff like code; regenerate with
//! `WEFT_UPDATE_GOLDEN=1 cargo test -p weft-node-agent --test masquerade`.

mod nft_support;

use nft_support::CASES;
use weft_node_agent::masquerade::render_masquerade;

#[test]
fn rendered_nat_tables_match_the_golden_files() {
    let mut failures = Vec::new();
    for case in CASES {
        let text = render_masquerade(&case.plan()).expect("enabled");
        if let Err(e) = weft_crds::golden::check_golden(
            &case.golden(),
            &text,
            "cargo test -p weft-node-agent --test masquerade",
        ) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
