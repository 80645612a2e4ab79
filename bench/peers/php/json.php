<?php
// The 1 KB JSON workload: the same object every peer encodes (see bench/README).
$items = [];
for ($i = 1; $i <= 16; $i++) {
    $items[] = ['id' => $i, 'name' => sprintf('item-%02d', $i), 'price' => $i * 1.25,
                'qty' => $i * 3, 'in_stock' => $i % 2 == 0];
}
$doc = ['id' => 12345, 'name' => 'afcgi benchmark', 'active' => true, 'score' => 0.5,
        'tags' => ['alpha', 'beta', 'gamma', 'delta'], 'items' => $items];
header('Content-Type: application/json');
echo json_encode($doc), "\n";
