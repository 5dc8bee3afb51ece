//! The testkit's pool conformance suite on `InProcessPool`: one test per check, on pools of two
//! workers and of one.

use dispatcher_runtime::InProcessPool;
use dispatcher_testkit::pool_conformance;

pool_conformance!(in_process_pool, || InProcessPool::new(2));

pool_conformance!(in_process_pool_of_one, || InProcessPool::new(1));
