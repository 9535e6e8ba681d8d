//! weft's API types: the `NetworkFabric` custom resource and the policy APIs that weft reads.
