// Integration tests start real processes and measure their behaviour on a 2-core machine:
// running them one at a time keeps them from starving each other.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
