# The assignment's consumer client, unchanged, plus the call that runs it.
from myqueue import MyConsumer

def consume():
    consumer = MyConsumer(
        topics=[ 'topic1', 'topic2'],
        broker='localhost:9092')
    try:
        # Consume messages
        for msg in consumer.get_next():
            # get_next() can be implemented as a generator
            print("consumed: ", msg.topic)
    finally:
        consumer.stop()


if __name__ == "__main__":
    try:
        consume()
    except KeyboardInterrupt:
        pass  # Ctrl-C ends the endless loop; stop() in `finally` stored the position
