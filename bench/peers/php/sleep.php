<?php
// The long-poll workload: wait ?ms=N (default 10000), then answer.
$ms = isset($_GET['ms']) ? (int)$_GET['ms'] : 10000;
usleep($ms * 1000);
header('Content-Type: text/plain');
echo "slept $ms\n";
