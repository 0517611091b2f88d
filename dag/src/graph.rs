//! The dependency graph of steps, built with petgraph.

use std::collections::{BTreeSet, HashMap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// Why a set of steps does not form a valid graph.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The steps depend on one another in a loop.
    #[error("steps form a cycle: {}\nhint: remove one of these dependencies (`needs` or an input `steps.<name>`)", cycle_text(.steps))]
    Cycle {
        /// The steps of the loop in order; the first one is repeated at the end.
        steps: Vec<String>,
    },
    /// A step depends on a step that does not exist.
    #[error(
        "step `{step}` depends on `{missing}`, which is not a step\nhint: the steps are: {known}"
    )]
    UnknownStep {
        /// The step with the bad dependency.
        step: String,
        /// The missing step.
        missing: String,
        /// The names of all steps, comma separated.
        known: String,
    },
    /// Two steps have one name.
    #[error("step `{0}` is defined twice\nhint: give each step its own name")]
    Duplicate(String),
}

fn cycle_text(steps: &[String]) -> String {
    steps
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// This module's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Steps and their dependencies; edges run from a dependency to its dependent.
#[derive(Debug, Clone)]
pub struct Graph {
    graph: DiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
    topo: Vec<NodeIndex>,
}

impl Graph {
    /// Build the graph from `(step, dependencies)` pairs, in declaration order.
    ///
    /// Refuses duplicate names, unknown dependencies and cycles (naming the
    /// steps of the loop in order).
    pub fn new<I, S, D>(steps: I) -> Result<Graph>
    where
        I: IntoIterator<Item = (S, D)>,
        S: Into<String>,
        D: IntoIterator,
        D::Item: Into<String>,
    {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        let mut deps = Vec::new();
        for (name, ds) in steps {
            let name = name.into();
            if index.contains_key(&name) {
                return Err(Error::Duplicate(name));
            }
            let node = graph.add_node(name.clone());
            index.insert(name, node);
            deps.push((
                node,
                ds.into_iter().map(Into::into).collect::<Vec<String>>(),
            ));
        }
        let mut froms: Vec<NodeIndex> = Vec::new();
        for (node, mut ds) in deps {
            // Unknown names are reported in name order, as before.
            ds.sort_unstable();
            ds.dedup();
            froms.clear();
            for d in ds {
                let Some(&from) = index.get(&d) else {
                    let mut known: Vec<&str> = index.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(Error::UnknownStep {
                        step: graph[node].clone(),
                        missing: d,
                        known: known.join(", "),
                    });
                };
                froms.push(from);
            }
            for &from in &froms {
                graph.add_edge(from, node, ());
            }
        }
        if let Some(cycle) = find_cycle(&graph) {
            return Err(Error::Cycle { steps: cycle });
        }
        let topo = stable_topo(&graph);
        Ok(Graph { graph, index, topo })
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether there are no steps.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Steps in an order where every step comes after its dependencies.
    pub fn topo_order(&self) -> impl Iterator<Item = &str> + '_ {
        self.topo.iter().map(|&n| self.graph[n].as_str())
    }

    /// The direct dependencies of `step`, sorted by name.
    pub fn deps(&self, step: &str) -> Vec<&str> {
        self.neighbors(step, Direction::Incoming)
    }

    /// The direct dependents of `step`, sorted by name.
    pub fn dependents(&self, step: &str) -> Vec<&str> {
        self.neighbors(step, Direction::Outgoing)
    }

    /// Whether `step` is in the graph.
    pub fn contains(&self, step: &str) -> bool {
        self.index.contains_key(step)
    }

    fn neighbors(&self, step: &str, dir: Direction) -> Vec<&str> {
        let Some(&n) = self.index.get(step) else {
            return Vec::new();
        };
        let mut out: Vec<&str> = self
            .graph
            .neighbors_directed(n, dir)
            .map(|m| self.graph[m].as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    pub(crate) fn node(&self, step: &str) -> Option<NodeIndex> {
        self.index.get(step).copied()
    }

    pub(crate) fn name(&self, n: NodeIndex) -> &str {
        &self.graph[n]
    }

    pub(crate) fn inner(&self) -> &DiGraph<String, ()> {
        &self.graph
    }
}

/// A topological order that keeps declaration order wherever the
/// dependencies allow it (Kahn's algorithm, smallest index first), so that
/// reports and records list steps the same way every time. The graph has no
/// cycle (checked before).
fn stable_topo(graph: &DiGraph<String, ()>) -> Vec<NodeIndex> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut missing: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..missing.len())
        .filter(|&i| missing[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(missing.len());
    while let Some(Reverse(i)) = ready.pop() {
        let n = NodeIndex::new(i);
        order.push(n);
        for m in graph.neighbors_directed(n, Direction::Outgoing) {
            missing[m.index()] -= 1;
            if missing[m.index()] == 0 {
                ready.push(Reverse(m.index()));
            }
        }
    }
    order
}

/// Find one cycle and return its steps in order, starting from the
/// alphabetically first step of the loop, with that step repeated at the end.
fn find_cycle(graph: &DiGraph<String, ()>) -> Option<Vec<String>> {
    let mut sccs: Vec<Vec<NodeIndex>> = tarjan_scc(graph)
        .into_iter()
        .filter(|c| c.len() > 1 || graph.contains_edge(c[0], c[0]))
        .collect();
    sccs.sort_by_key(|c| c.iter().map(|&n| graph[n].clone()).min());
    let scc = sccs.into_iter().next()?;
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let start = *scc.iter().min_by_key(|&&n| &graph[n])?;
    // Depth-first search inside the component for a path back to `start`.
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    if dfs_back(graph, &members, start, start, &mut path, &mut seen) {
        let mut names: Vec<String> = path.iter().map(|&n| graph[n].clone()).collect();
        names.push(graph[start].clone());
        return Some(names);
    }
    Some(vec![graph[start].clone(), graph[start].clone()])
}

fn dfs_back(
    graph: &DiGraph<String, ()>,
    members: &BTreeSet<NodeIndex>,
    start: NodeIndex,
    at: NodeIndex,
    path: &mut Vec<NodeIndex>,
    seen: &mut BTreeSet<NodeIndex>,
) -> bool {
    let mut next: Vec<NodeIndex> = graph
        .edges_directed(at, Direction::Outgoing)
        .map(|e| e.target())
        .filter(|t| members.contains(t))
        .collect();
    next.sort_by_key(|&n| &graph[n]);
    for t in next {
        if t == start {
            return true;
        }
        if seen.insert(t) {
            path.push(t);
            if dfs_back(graph, members, start, t, path, seen) {
                return true;
            }
            path.pop();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(steps: &[(&str, &[&str])]) -> Result<Graph> {
        Graph::new(
            steps
                .iter()
                .map(|(s, d)| (s.to_string(), d.iter().map(|x| x.to_string()))),
        )
    }

    #[test]
    fn orders_dependencies_first() {
        let graph = g(&[
            ("train", &["featurize"]),
            ("featurize", &["validate"]),
            ("validate", &[]),
        ])
        .unwrap();
        let order: Vec<&str> = graph.topo_order().collect();
        assert_eq!(order, ["validate", "featurize", "train"]);

        assert_eq!(graph.deps("train"), ["featurize"]);
        assert_eq!(graph.dependents("validate"), ["featurize"]);
    }

    #[test]
    fn topological_order_keeps_declaration_order_where_it_can() {
        let graph = g(&[("b", &[]), ("a", &["b"]), ("c", &[]), ("d", &["a"])]).unwrap();
        let order: Vec<&str> = graph.topo_order().collect();
        assert_eq!(order, ["b", "a", "c", "d"]);
        let graph = g(&[("late", &["early"]), ("other", &[]), ("early", &[])]).unwrap();
        let order: Vec<&str> = graph.topo_order().collect();
        assert_eq!(order, ["other", "early", "late"]);
    }

    #[test]
    fn cycle_names_its_steps_in_order() {
        let err = g(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]).unwrap_err();
        assert_eq!(
            err,
            Error::Cycle {
                steps: vec!["a".into(), "b".into(), "c".into(), "a".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            "steps form a cycle: `a` -> `b` -> `c` -> `a`\nhint: remove one of these dependencies (`needs` or an input `steps.<name>`)"
        );
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let err = g(&[("a", &["a"])]).unwrap_err();
        assert_eq!(
            err,
            Error::Cycle {
                steps: vec!["a".into(), "a".into()]
            }
        );
    }

    #[test]
    fn unknown_and_duplicate_steps_are_refused() {
        let err = g(&[("a", &["nope"]), ("b", &[])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "step `a` depends on `nope`, which is not a step\nhint: the steps are: a, b"
        );
        assert_eq!(
            g(&[("a", &[]), ("a", &[])]).unwrap_err(),
            Error::Duplicate("a".into())
        );
    }
}
