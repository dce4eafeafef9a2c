//! Errors for topology parsing and validation.

/// Why a topology or CPU list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// A dimension is zero.
    #[error("topology dimension `{dimension}` must be at least 1")]
    ZeroDimension {
        /// Name of the dimension (numa_nodes, llcs, cores, threads).
        dimension: &'static str,
    },
    /// The CPU count exceeds what ktstr supports.
    #[error("topology has {cpus} CPUs; at most {max} are supported")]
    TooManyCpus {
        /// CPUs the topology asks for.
        cpus: u64,
        /// Supported maximum.
        max: u32,
    },
    /// A `N,L,C,T` string did not parse.
    #[error("bad topology `{input}`: expected NUMA,LLCS,CORES,THREADS such as 1,2,4,2")]
    BadSpec {
        /// The string given.
        input: String,
    },
    /// A CPU list such as `0-3,8` did not parse.
    #[error("bad CPU list `{input}`")]
    BadCpuList {
        /// The string given.
        input: String,
    },
}
