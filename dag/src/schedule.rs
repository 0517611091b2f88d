//! Which steps may run now, given what has finished.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use crate::Graph;

/// Where a step is in a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Some dependency has not finished yet.
    Waiting,
    /// Every dependency succeeded; the step may start.
    Ready,
    /// Handed out by [`Scheduler::take_ready`] and not finished yet.
    Running,
    /// Finished successfully (ran, or was a cache hit).
    Succeeded,
    /// Ran and failed.
    Failed,
    /// Never ran because a dependency failed or was skipped.
    Skipped,
}

/// The state machine of one build: hands out ready steps in a stable order
/// and stops the dependents of a failed step.
#[derive(Debug)]
pub struct Scheduler<'g> {
    graph: &'g Graph,
    state: Vec<StepState>,
    missing: Vec<usize>,
    /// Position of each node in the topological order, used as priority.
    rank: Vec<usize>,
    /// Ready steps as `(rank, node)`, smallest rank first. A step skipped
    /// while in here stays until popped and is then passed over, so that
    /// taking a step costs O(log n), not a scan of every step (a build of
    /// 10,000 steps takes 10,000).
    ready: BinaryHeap<Reverse<(usize, usize)>>,
}

impl<'g> Scheduler<'g> {
    /// Start a build of every step in `graph`.
    pub fn new(graph: &'g Graph) -> Self {
        let g = graph.inner();
        let n = g.node_count();
        let mut missing = vec![0; n];
        let mut state = vec![StepState::Waiting; n];
        for node in g.node_indices() {
            missing[node.index()] = g.neighbors_directed(node, Direction::Incoming).count();
            if missing[node.index()] == 0 {
                state[node.index()] = StepState::Ready;
            }
        }
        let mut rank = vec![0; n];
        for (i, name) in graph.topo_order().enumerate() {
            if let Some(node) = graph.node(name) {
                rank[node.index()] = i;
            }
        }
        let ready = (0..n)
            .filter(|&i| state[i] == StepState::Ready)
            .map(|i| Reverse((rank[i], i)))
            .collect();
        Scheduler {
            graph,
            state,
            missing,
            rank,
            ready,
        }
    }

    /// Take the next ready step (earliest in topological order) and mark it running.
    pub fn take_ready(&mut self) -> Option<&'g str> {
        while let Some(Reverse((_, node))) = self.ready.pop() {
            if self.state[node] == StepState::Ready {
                self.state[node] = StepState::Running;
                return Some(self.graph.name(NodeIndex::new(node)));
            }
        }
        None
    }

    /// Record that `step` finished. Returns the steps that will now never run
    /// because of it (empty when it succeeded).
    ///
    /// # Panics
    /// If `step` is not a running step of this graph: that is a bug in the caller.
    pub fn finish(&mut self, step: &str, ok: bool) -> Vec<&'g str> {
        let node = self
            .graph
            .node(step)
            .expect("finish() of a step that is not in the graph");
        assert_eq!(
            self.state[node.index()],
            StepState::Running,
            "finish() of `{step}` twice"
        );
        let g = self.graph.inner();
        if ok {
            self.state[node.index()] = StepState::Succeeded;
            for next in g.neighbors_directed(node, Direction::Outgoing) {
                self.missing[next.index()] -= 1;
                if self.missing[next.index()] == 0 && self.state[next.index()] == StepState::Waiting
                {
                    self.state[next.index()] = StepState::Ready;
                    self.ready
                        .push(Reverse((self.rank[next.index()], next.index())));
                }
            }
            return Vec::new();
        }
        self.state[node.index()] = StepState::Failed;
        let mut skipped = Vec::new();
        let mut stack: Vec<NodeIndex> = g.neighbors_directed(node, Direction::Outgoing).collect();
        while let Some(n) = stack.pop() {
            if matches!(self.state[n.index()], StepState::Waiting | StepState::Ready) {
                self.state[n.index()] = StepState::Skipped;
                skipped.push(self.graph.name(n));
                stack.extend(g.neighbors_directed(n, Direction::Outgoing));
            }
        }
        skipped.sort_unstable();
        skipped
    }

    /// The state of `step`, or `None` if it is not in the graph.
    pub fn state(&self, step: &str) -> Option<StepState> {
        self.graph.node(step).map(|n| self.state[n.index()])
    }

    /// How many steps are running.
    pub fn running(&self) -> usize {
        self.state
            .iter()
            .filter(|s| **s == StepState::Running)
            .count()
    }

    /// Whether nothing is running and nothing more can start.
    pub fn is_done(&self) -> bool {
        self.state.iter().all(|s| {
            matches!(
                s,
                StepState::Succeeded | StepState::Failed | StepState::Skipped
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Graph {
        // validate -> featurize -> train -> evaluate; lint is independent
        Graph::new([
            ("validate", vec![]),
            ("featurize", vec!["validate"]),
            ("train", vec!["featurize"]),
            ("evaluate", vec!["train", "featurize"]),
            ("lint", vec![]),
        ])
        .unwrap()
    }

    #[test]
    fn independent_steps_are_ready_together() {
        let g = graph();
        let mut s = Scheduler::new(&g);
        let a = s.take_ready().unwrap();
        let b = s.take_ready().unwrap();
        let mut both = [a, b];
        both.sort_unstable();
        assert_eq!(both, ["lint", "validate"]);
        assert_eq!(s.take_ready(), None);
        assert_eq!(s.running(), 2);
        s.finish("validate", true);
        assert_eq!(s.take_ready(), Some("featurize"));
    }

    #[test]
    fn failure_skips_every_dependent_and_nothing_else() {
        let g = graph();
        let mut s = Scheduler::new(&g);
        while let Some(step) = s.take_ready() {
            if step == "validate" {
                s.finish(step, true);
            }
            if step == "lint" {
                s.finish(step, true);
            }
            if step == "featurize" {
                assert_eq!(s.finish(step, false), ["evaluate", "train"]);
            }
        }
        assert!(s.is_done());
        assert_eq!(s.state("lint"), Some(StepState::Succeeded));
        assert_eq!(s.state("train"), Some(StepState::Skipped));
        assert_eq!(s.state("featurize"), Some(StepState::Failed));
    }

    /// Ready steps come out in topological (declaration) order, whatever
    /// order they became ready in, and a skipped step never comes out.
    #[test]
    fn ready_steps_come_out_in_topological_order() {
        // a and b first; c needs b, d needs a, e needs a; x fails and
        // takes y with it.
        let g = Graph::new([
            ("x", vec![]),
            ("a", vec![]),
            ("b", vec![]),
            ("y", vec!["x"]),
            ("c", vec!["b"]),
            ("d", vec!["a"]),
            ("e", vec!["a", "y"]),
        ])
        .unwrap();
        let mut s = Scheduler::new(&g);
        assert_eq!(s.take_ready(), Some("x"));
        assert_eq!(s.take_ready(), Some("a"));
        assert_eq!(s.take_ready(), Some("b"));
        s.finish("b", true);
        s.finish("a", true);
        assert_eq!(s.finish("x", false), ["e", "y"]);
        assert_eq!(s.take_ready(), Some("c"));
        assert_eq!(s.take_ready(), Some("d"));
        assert_eq!(s.take_ready(), None);
    }

    #[test]
    fn a_step_waits_for_all_its_dependencies() {
        let g = graph();
        let mut s = Scheduler::new(&g);
        assert!(s.take_ready().is_some() && s.take_ready().is_some());
        s.finish("validate", true);
        s.finish("lint", true);
        assert_eq!(s.take_ready(), Some("featurize"));
        s.finish("featurize", true);
        assert_eq!(s.take_ready(), Some("train"));
        assert_eq!(s.state("evaluate"), Some(StepState::Waiting));
        s.finish("train", true);
        assert_eq!(s.take_ready(), Some("evaluate"));
    }
}
