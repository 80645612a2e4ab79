<?php
// The upload workload: read the whole body, answer its length.
$body = file_get_contents('php://input');
header('Content-Type: text/plain');
echo "length ", strlen($body), "\n";
